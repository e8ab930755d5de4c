"""Reading what people write: todo files, their front matter, plans, the folder's scanner and watcher."""
