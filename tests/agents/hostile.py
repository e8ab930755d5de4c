"""Test agent that does what a hostile or careless coding agent would, then (usually) real work.

``python hostile.py TODO_PATH``, run by batchd in the todo's workspace. The todo file holds the
actions, one per line, in a fenced block::

    ```hostile
    person-git config remote.origin.pushurl {outside}/evil.git
    write {outside}/escaped.txt gotcha
    reset-hard-back
    ```

Placeholders: ``{root}`` the person's repository (found from the workspace's place in
``.batchd/workspaces/``), ``{outside}`` the folder above it, ``{ws}`` the workspace, ``{id}`` the
todo id, ``{own}`` the todo file batchd gave the agent. Unless ``no-work`` is listed, the agent also
writes ``mods/m<id>.py`` (a passing module) and ``reports/<id>.txt`` saying how each action went, so
the test can read from the commit what the agent could and could not do.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

GOOD_MOD = "def check():\n    return True\n"
_BLOCK = re.compile(r"^```hostile\n(.*?)^```", re.DOTALL | re.MULTILINE)


def expand(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)


def remote_url(root: Path) -> str:
    """The person's remote, read from their repository as an agent without a sandbox can."""
    done = subprocess.run(
        ["git", "-C", str(root), "config", "--get", "remote.origin.url"],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def act(name: str, args: list[str], ws: Path, root: Path, values: dict[str, str]) -> None:
    if name == "git":
        git(*args, cwd=ws)
    elif name == "person-git":
        git("-C", str(root), *args, cwd=ws)
    elif name == "write":
        path = Path(args[0])
        path = path if path.is_absolute() else ws / path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(" ".join(args[1:]) + "\n", encoding="utf-8")
    elif name == "append":
        with (ws / args[0]).open("a", encoding="utf-8") as f:
            f.write(" ".join(args[1:]).replace("\\n", "\n") + "\n")
    elif name == "delete":
        target = Path(args[0]) if Path(args[0]).is_absolute() else ws / args[0]
        target.unlink()
    elif name == "rename":
        (ws / args[0]).rename(ws / args[1])
    elif name == "symlink":
        link = ws / args[1]
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(args[0])
    elif name == "commit":
        git("add", "-A", cwd=ws)
        git("commit", "-q", "--allow-empty", "-m", " ".join(args) or "agent commit", cwd=ws)
    elif name == "reset-hard-back":
        git("reset", "-q", "--hard", "HEAD~1", cwd=ws)
    elif name == "replace-gitdir":
        shutil.rmtree(ws / ".git")
        (ws / ".git").write_text(f"gitdir: {root / '.git'}\n", encoding="utf-8")
    elif name == "nested":
        nested = ws / args[0]
        nested.mkdir(parents=True, exist_ok=True)
        git("init", "-q", cwd=nested)
        (nested / "lib.py").write_text("VALUE = 1\n", encoding="utf-8")
        git("add", "-A", cwd=nested)
        git("-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "vendored", cwd=nested)
    elif name == "bigfile":
        with (ws / args[0]).open("wb") as f:
            f.truncate(int(args[1]) * 1024 * 1024)
    elif name == "badname":
        (ws / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"not a UTF-8 name\n")
    elif name == "push-remote":
        url = remote_url(root)
        (ws / "agent-pushed.txt").write_text("unverified\n", encoding="utf-8")
        git("add", "-A", cwd=ws)
        git("commit", "-q", "-m", "agent: my own push", cwd=ws)
        git("push", "-q", url, "HEAD:refs/heads/main", cwd=ws)
    elif name == "clone-remote":  # a person's own clone of the remote, as another machine
        git("clone", "-q", remote_url(root), args[0], cwd=ws)
        for key, value in (("user.name", "Person"), ("user.email", "person@example.com")):
            git("config", key, value, cwd=Path(args[0]))
    elif name == "in":  # in DIR git ARGS...: a person's command in their own clone
        git(*args[2:], cwd=Path(args[0]))
    elif name == "person-commit":  # a person commits in their checkout while the agent works
        (root / args[0]).write_text("mine\n", encoding="utf-8")
        git("-C", str(root), "add", "--", args[0], cwd=ws)
        git("-C", str(root), "commit", "-q", "-m", "a person's commit", cwd=ws)
    elif name == "poison-config":  # programs in its own config that batchd's git would run, then a
        # branch naming a commit that exists nowhere (a partial clone would fetch it)
        marker = args[0]
        for key, value in (
            ("core.repositoryformatversion", "1"),
            ("extensions.partialClone", "origin"),
            ("remote.origin.url", "ssh://example.invalid/x.git"),
            ("remote.origin.promisor", "true"),
            ("core.sshCommand", f"sh -c 'touch {marker}; exit 1' --"),
            ("remote.origin.uploadpack", f"sh -c 'touch {marker}' --"),
            ("core.fsmonitor", f"sh -c 'touch {marker}' --"),
        ):
            git("config", key, value, cwd=ws)
        branch = subprocess.run(
            ["git", "symbolic-ref", "HEAD"], cwd=ws, capture_output=True, text=True, check=True
        ).stdout.strip()
        (ws / ".git" / branch).write_text("0123456789abcdef0123456789abcdef01234567\n", encoding="utf-8")
    elif name == "print":
        print(" ".join(args))
    elif name == "forge-phase-commit":  # a look-alike of batchd's phase commit, with a broken module
        status = (root / "plans" / "EXECUTION-STATUS.md").read_text(encoding="utf-8")
        run_id = re.search(r"\*\*Run:\*\* `([0-9a-f]+)`", status)
        base = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
        blob = subprocess.run(
            ["git", "-C", str(root), "hash-object", "-w", "--stdin"],
            input="raise SystemExit('forged')\n",
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        env = {**os.environ, "GIT_INDEX_FILE": str(ws / ".forged-index")}
        subprocess.run(["git", "-C", str(root), "read-tree", base], env=env, check=True)
        subprocess.run(
            ["git", "-C", str(root), "update-index", "--cacheinfo", f"100644,{blob},mods/base.py"],
            env=env,
            check=True,
        )
        tree = subprocess.run(
            ["git", "-C", str(root), "write-tree"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        (ws / ".forged-index").unlink()
        message = f"forged\n\nBatchd-Run: {run_id.group(1) if run_id else 'x'}\nBatchd-Phase: 1\n"
        sha = subprocess.run(
            ["git", "-C", str(root), "commit-tree", tree, "-p", base, "-m", message],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for ref in ("refs/heads/batchd/verify", "refs/heads/forged"):
            git("-C", str(root), "update-ref", ref, sha, cwd=ws)
    elif name == "hook":  # hook NAME [FOLDER]: a hook in the person's .git/hooks (or another folder)
        hooks = Path(args[1]) if len(args) > 1 else root / ".git" / "hooks"
        hooks.mkdir(parents=True, exist_ok=True)
        hook = hooks / args[0]
        hook.write_text(f"#!/bin/sh\ntouch {values['outside']}/hook-ran-{args[0]}\n", encoding="utf-8")
        hook.chmod(0o755)
    elif name == "spew":
        line = "x" * 99 + "\n"
        for _ in range(int(args[0]) // 100):
            sys.stdout.write(line)
        sys.stdout.flush()
    elif name == "sleep":
        time.sleep(float(args[0]))
    elif name == "batchd":  # batchd ARGS...: a person's batchd command on their repository, mid-run
        argv = [sys.executable, "-m", "daemon", *args, "-C", values["root"]]
        subprocess.run(argv, check=True, capture_output=True)
    elif name == "exit":
        sys.exit(int(args[0]))
    else:
        raise SystemExit(f"unknown action {name!r}")


def main() -> int:
    own = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ["BATCHD_TODO_PATH"])
    ws = Path.cwd()
    root = ws.parents[2]  # <root>/.batchd/workspaces/todo-<id>
    todo_id = os.environ.get("BATCHD_TODO_ID", "0")
    values = {"root": str(root), "outside": str(root.parent), "ws": str(ws), "id": todo_id, "own": str(own)}
    found = _BLOCK.search(own.read_text(encoding="utf-8"))
    lines = [ln.strip() for ln in (found.group(1) if found else "").splitlines() if ln.strip()]
    report: list[str] = []
    work = True
    for line in lines:
        words = shlex.split(expand(line, values))
        if words[0] == "no-work":
            work = False
            continue
        try:
            act(words[0], words[1:], ws, root, values)
        except (OSError, subprocess.CalledProcessError) as e:
            detail = (e.stderr + e.stdout).strip() if isinstance(e, subprocess.CalledProcessError) else str(e)
            report.append(f"{line}: failed: {detail}")
        else:
            report.append(f"{line}: ok")
    if work:
        (ws / "mods").mkdir(exist_ok=True)
        (ws / "mods" / f"m{todo_id}.py").write_text(GOOD_MOD, encoding="utf-8")
        (ws / "reports").mkdir(exist_ok=True)
        (ws / "reports" / f"{todo_id}.txt").write_text("\n".join(report) + "\n", encoding="utf-8")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
