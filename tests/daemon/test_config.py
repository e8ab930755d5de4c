"""batchd.toml: loading, validation errors, diffs for SIGHUP, rendering for `batchd init`."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from daemon.config import (
    PRESETS,
    AgentConfig,
    Config,
    default_config,
    detect_verify_commands,
    diff_config,
    load_config,
)
from daemon.config_render import render_default_config
from daemon.exceptions import ConfigError

MINIMAL = '[verify]\ncommands = [["npm", "test"]]\n'


def write(root: Path, text: str) -> Path:
    path = root / "batchd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(root: Path, text: str) -> Config:
    write(root, text)
    return load_config(root)


def error(root: Path, text: str) -> ConfigError:
    write(root, text)
    with pytest.raises(ConfigError) as info:
        load_config(root)
    return info.value


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    """A file with only verify commands loads with every other key at its default."""
    config = load(tmp_path, MINIMAL)
    assert config == default_config(tmp_path, [["npm", "test"]])
    assert config.batchd.max_parallel == 5
    assert config.agent.preset == "claude"
    assert config.verify.strategy == "bisect"


def test_full_example_loads_as_tuples(tmp_path: Path) -> None:
    """The contract's example file loads, with lists turned into tuples."""
    config = load(
        tmp_path,
        """
[batchd]
todos_dir = "todos"
plan = "plans/PLAN.md"
status_file = "plans/EXECUTION-STATUS.md"
branch = "main"
remote = "origin"
max_parallel = 3
max_attempts = 2
commit_mode = "todo"
stop_timeout = 60
rescan_interval = 30
ignore = ["README.md", ".gitkeep", "TEMPLATE*.md"]
db = "postgresql://u@h/db"
[agent]
preset = "codex"
command = ["my-agent", "--todo", "{todo_path}"]
timeout = 1800
prompt_file = ""
setup = ["npm", "ci"]
env = {NODE_ENV = "test"}
[verify]
commands = [["npm", "run", "typecheck"], ["npm", "test"]]
strategy = "incremental"
retries = 0
repair = false
timeout = 900.5
conflicts = "strict"
""",
    )
    assert config.batchd.ignore == ("README.md", ".gitkeep", "TEMPLATE*.md")
    assert config.batchd.commit_mode == "todo"
    assert config.agent.command == ("my-agent", "--todo", "{todo_path}")
    assert config.agent.setup == (("npm", "ci"),)
    assert dict(config.agent.env) == {"NODE_ENV": "test"}
    assert config.verify.commands == (("npm", "run", "typecheck"), ("npm", "test"))
    assert config.verify.timeout == 900.5
    assert config.db_url == "postgresql://u@h/db"


def test_config_is_frozen(tmp_path: Path) -> None:
    """A loaded config cannot be changed in place."""
    config = load(tmp_path, MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batchd.max_parallel = 9  # type: ignore[misc]


def test_missing_file_says_how_to_write_one(tmp_path: Path) -> None:
    """No batchd.toml: the error names the file and says to run `batchd init` or add [verify]."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert "batchd.toml" in str(info.value)
    assert "batchd init" in info.value.hint
    assert "[verify]" in info.value.hint


def test_missing_verify_commands_is_an_error(tmp_path: Path) -> None:
    """A file without verify commands is refused, naming verify.commands."""
    err = error(tmp_path, '[batchd]\nbranch = "main"\n')
    assert err.key == "verify.commands"
    assert "batchd init" in err.hint


def test_unknown_key_suggests_nearest(tmp_path: Path) -> None:
    """A misspelt key names the key and suggests the known one nearest to it."""
    err = error(tmp_path, MINIMAL + "[batchd]\nmax_paralel = 3\n")
    assert err.key == "batchd.max_paralel"
    assert "max_parallel" in err.hint
    assert str(tmp_path / "batchd.toml") in str(err)


def test_key_in_wrong_section_names_its_section(tmp_path: Path) -> None:
    """A key that belongs to another section says which."""
    err = error(tmp_path, MINIMAL + '[batchd]\nstrategy = "bisect"\n')
    assert "[verify]" in err.hint


def test_unknown_section_suggests_nearest(tmp_path: Path) -> None:
    """A misspelt section name is an error with a suggestion."""
    err = error(tmp_path, MINIMAL + "[agnet]\ntimeout = 5\n")
    assert "agnet" in str(err)
    assert "agent" in err.hint


def test_wrong_type_says_expected_and_got(tmp_path: Path) -> None:
    """A string where an integer belongs says both types and the key."""
    err = error(tmp_path, MINIMAL + '[batchd]\nmax_parallel = "5"\n')
    assert err.key == "batchd.max_parallel"
    assert "expected an integer" in str(err)
    assert 'a string ("5")' in str(err)


def test_boolean_is_not_an_integer(tmp_path: Path) -> None:
    """true for an integer key is a type error, not 1."""
    err = error(tmp_path, MINIMAL + "retries = true\n")
    assert err.key == "verify.retries"


def test_verify_command_as_string_says_write_argv(tmp_path: Path) -> None:
    """commands = "npm test" is refused with the argv form to write instead."""
    err = error(tmp_path, '[verify]\ncommands = "npm test"\n')
    assert err.key == "verify.commands"
    assert 'write each command as an argv list: [["npm", "test"]]' in err.hint


def test_verify_command_list_of_strings_says_write_argv(tmp_path: Path) -> None:
    """commands = ["npm test", "make lint"] suggests one argv list per command."""
    err = error(tmp_path, '[verify]\ncommands = ["npm test", "make lint"]\n')
    assert '[["npm", "test"], ["make", "lint"]]' in err.hint


def test_agent_command_as_string_says_write_argv(tmp_path: Path) -> None:
    """[agent] command = "my-agent --x" is refused with the argv form."""
    err = error(tmp_path, MINIMAL + '[agent]\ncommand = "my-agent --todo {todo_path}"\n')
    assert err.key == "agent.command"
    assert 'write it as an argv list: ["my-agent", "--todo", "{todo_path}"]' in err.hint


def test_empty_verify_command_is_an_error(tmp_path: Path) -> None:
    """An empty argv inside verify.commands names its index."""
    err = error(tmp_path, '[verify]\ncommands = [["npm", "test"], []]\n')
    assert err.key == "verify.commands[1]"


def test_bad_enum_value_suggests(tmp_path: Path) -> None:
    """strategy = "bisec" lists the allowed values and suggests the nearest."""
    err = error(tmp_path, MINIMAL + 'strategy = "bisec"\n')
    assert err.key == "verify.strategy"
    assert "bisect, incremental" in str(err)
    assert '"bisect"' in err.hint


def test_max_parallel_below_one_is_an_error(tmp_path: Path) -> None:
    """max_parallel = 0 is refused."""
    err = error(tmp_path, MINIMAL + "[batchd]\nmax_parallel = 0\n")
    assert err.key == "batchd.max_parallel"
    assert "at least 1" in str(err)


def test_non_positive_timeout_is_an_error(tmp_path: Path) -> None:
    """An agent timeout of 0 is refused."""
    err = error(tmp_path, MINIMAL + "[agent]\ntimeout = 0\n")
    assert err.key == "agent.timeout"


def test_invalid_toml_names_line_and_column(tmp_path: Path) -> None:
    """A syntax error says the file, line and column."""
    err = error(tmp_path, MINIMAL + "[batchd]\nbranch = main\n")
    assert "invalid TOML" in str(err)
    assert "line 4" in str(err)
    assert "column" in str(err)


def test_unknown_placeholder_in_command_suggests(tmp_path: Path) -> None:
    """{todo} in the agent command is refused with {todo_id}/{todo_path} suggested."""
    err = error(tmp_path, MINIMAL + '[agent]\ncommand = ["a", "{todo_pth}"]\n')
    assert "{todo_path}" in err.hint


def test_literal_json_braces_in_command_are_allowed(tmp_path: Path) -> None:
    """Braces that are not a placeholder name (JSON arguments) pass validation."""
    config = load(tmp_path, MINIMAL + '[agent]\ncommand = ["a", "{\\"k\\": 1}", "{todo_path}"]\n')
    assert config.agent.command[1] == '{"k": 1}'


def test_command_wins_over_preset(tmp_path: Path) -> None:
    """With both preset and command, the command is the agent argv."""
    config = load(tmp_path, MINIMAL + '[agent]\npreset = "aider"\ncommand = ["mine", "{prompt}"]\n')
    assert config.agent.argv_template == ("mine", "{prompt}")


def test_preset_gives_argv_without_command(tmp_path: Path) -> None:
    """Without a command the preset's argv is used."""
    config = load(tmp_path, MINIMAL + '[agent]\npreset = "codex"\n')
    assert config.agent.argv_template == PRESETS["codex"]


def test_setup_accepts_several_commands(tmp_path: Path) -> None:
    """setup may be a list of argv lists."""
    config = load(tmp_path, MINIMAL + '[agent]\nsetup = [["npm", "ci"], ["npm", "run", "build"]]\n')
    assert config.agent.setup == (("npm", "ci"), ("npm", "run", "build"))


def test_missing_prompt_file_is_an_error(tmp_path: Path) -> None:
    """prompt_file naming a file that does not exist is refused at load."""
    err = error(tmp_path, MINIMAL + '[agent]\nprompt_file = "prompts/nope.md"\n')
    assert err.key == "agent.prompt_file"


def test_env_values_must_be_strings(tmp_path: Path) -> None:
    """env = {N = 1} is a type error."""
    err = error(tmp_path, MINIMAL + "[agent]\nenv = {N = 1}\n")
    assert err.key == "agent.env"


def test_db_path_becomes_sqlite_url_under_root(tmp_path: Path) -> None:
    """A db path is resolved to a sqlite URL under the repository."""
    config = load(tmp_path, MINIMAL)
    assert config.db_url == f"sqlite:///{(tmp_path / '.batchd/events.db').resolve()}"


def test_diff_config_lists_changed_keys(tmp_path: Path) -> None:
    """diff_config reports each changed key as "key: old -> new"."""
    old = load(tmp_path, MINIMAL)
    new = load(tmp_path, MINIMAL + "retries = 3\n[batchd]\nmax_parallel = 2\n")
    assert diff_config(old, new) == ["batchd.max_parallel: 5 -> 2", "verify.retries: 5 -> 3"]


def test_diff_config_of_equal_configs_is_empty(tmp_path: Path) -> None:
    """Reloading an unchanged file reports nothing."""
    assert diff_config(load(tmp_path, MINIMAL), load(tmp_path, MINIMAL)) == []


def test_diff_config_renders_sequences_as_toml(tmp_path: Path) -> None:
    """Changed argv lists are shown in TOML form."""
    old = load(tmp_path, MINIMAL)
    new = load(tmp_path, '[verify]\ncommands = [["make", "test"]]\n')
    assert diff_config(old, new) == ['verify.commands: [["npm", "test"]] -> [["make", "test"]]']


def test_rendered_default_config_loads_back_as_defaults(tmp_path: Path) -> None:
    """The file `batchd init` writes loads to exactly the default config."""
    commands = [["npm", "test"], ["python", "-m", "pytest"]]
    config = load(tmp_path, render_default_config(commands))
    assert config == default_config(tmp_path, commands)


def test_rendered_default_config_mentions_every_key() -> None:
    """Every key of every section appears in the rendered file."""
    parsed = tomllib.loads(render_default_config([["npm", "test"]]))
    defaults = default_config(Path("."), [])
    for name in ("batchd", "agent", "verify"):
        assert set(parsed[name]) == {f.name for f in dataclasses.fields(getattr(defaults, name))}


def test_rendered_config_without_detected_commands_refuses_to_load(tmp_path: Path) -> None:
    """When nothing was detected, the rendered file explains and loading asks for commands."""
    text = render_default_config([])
    assert '# commands = [["npm", "run", "typecheck"], ["npm", "test"]]' in text
    assert error(tmp_path, text).key == "verify.commands"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"package.json": "{}"}, [["npm", "test"]]),
        ({"pyproject.toml": ""}, [["python3", "-m", "pytest"]]),
        ({"setup.cfg": ""}, [["python3", "-m", "pytest"]]),
        ({"pytest.ini": "[pytest]\n"}, [["python3", "-m", "pytest"]]),
        ({"tests/test_app.py": ""}, [["python3", "-m", "pytest"]]),
        ({"tests/unit/test_app.py": "", "pyproject.toml": ""}, [["python3", "-m", "pytest"]]),
        ({"tests/app.test.js": "", "package.json": "{}"}, [["npm", "test"]]),
        ({"Makefile": "build:\n\tcc x.c\ntest: build\n\t./t\n"}, [["make", "test"]]),
        ({"Makefile": "TEST := 1\nbuild:\n\tcc x.c\n"}, []),
        ({"Cargo.toml": ""}, [["cargo", "test"]]),
        ({"go.mod": ""}, [["go", "test", "./..."]]),
        ({"package.json": "{}", "Makefile": "test:\n\tx\n"}, [["npm", "test"], ["make", "test"]]),
        ({}, []),
    ],
)
def test_detect_verify_commands(tmp_path: Path, files: dict[str, str], expected: list[list[str]]) -> None:
    """Build files at the root map to their usual test commands (a tests/ folder of Python files,
    or pytest.ini, to pytest; one that holds JavaScript does not)."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert detect_verify_commands(tmp_path) == expected


def test_agent_config_default_env_is_read_only() -> None:
    """The default env mapping cannot be mutated through one instance."""
    with pytest.raises(TypeError):
        AgentConfig().env["X"] = "1"  # type: ignore[index]


# --- one declaration per key ----------------------------------------------------------------------


def test_the_readmes_table_is_the_one_the_declarations_write() -> None:
    """README.md's configuration table lists every key, with the default and help declared beside
    its field; `python -m daemon.config_render` rewrites it after a change."""
    from daemon.config_render import readme_section

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert readme_section() in readme, "README.md's table is stale: run `python -m daemon.config_render`"


def test_every_key_is_declared_with_a_check_and_a_help_text_and_shown_in_the_template() -> None:
    from daemon.config import SECTIONS, keys

    template = render_default_config([["npm", "test"]])
    for section in SECTIONS:
        for name, f in keys(section).items():
            assert callable(f.metadata["check"]), f"[{section}] {name}"
            assert str(f.metadata["help"]).strip(), f"[{section}] {name}"
            assert f"\n{name} = " in template, f"[{section}] {name} is missing from the template"


def test_a_key_unknown_to_the_declarations_is_refused_with_the_nearest_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'schedule'") as info:
        load(tmp_path, MINIMAL + '[batchd]\nschedul = "barrier"\n')
    assert info.value.key == "batchd.schedul"


def test_schedule_takes_only_its_two_policies(tmp_path: Path) -> None:
    assert load(tmp_path, MINIMAL + '[batchd]\nschedule = "barrier"\n').batchd.schedule == "barrier"
    with pytest.raises(ConfigError, match="must be one of continuous, barrier"):
        load(tmp_path, MINIMAL + '[batchd]\nschedule = "fast"\n')


def test_unknown_placeholder_in_open_request_is_refused_at_load(tmp_path: Path) -> None:
    """{head} in open_request is refused naming the key, with {branch} suggested and the known ones."""
    text = '[batchd]\nland = "branch"\nopen_request = ["gh", "pr", "create", "--head", "{head}"]\n'
    err = error(tmp_path, text + MINIMAL)
    assert err.key == "batchd.open_request"
    assert "unknown placeholder {head}" in err.message
    assert "{body_file}" in err.hint


def test_open_request_without_land_branch_is_refused(tmp_path: Path) -> None:
    """open_request with land = "push" (nothing to open a request from) is a config error saying how."""
    err = error(tmp_path, '[batchd]\nopen_request = ["gh", "pr", "create"]\n' + MINIMAL)
    assert err.key == "batchd.open_request"
    assert 'land = "branch"' in err.hint


def test_land_branch_without_a_remote_is_refused(tmp_path: Path) -> None:
    """land = "branch" with remote = "" would push nothing: a config error naming both ways out."""
    err = error(tmp_path, '[batchd]\nland = "branch"\nremote = ""\n' + MINIMAL)
    assert err.key == "batchd.land"
    assert 'remote = "origin"' in err.hint and 'land = "push"' in err.hint


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1", "true", '"0.05"'])
@pytest.mark.parametrize("key", ["flake_rate", "false_blame"])
def test_a_probability_must_be_between_0_and_1(tmp_path: Path, key: str, value: str) -> None:
    """flake_rate and false_blame outside (0, 1), or not a number, name the key and say why."""
    err = error(tmp_path, MINIMAL + f"{key} = {value}\n")
    assert err.key == f"verify.{key}"
    assert "between 0 and 1" in err.message


@pytest.mark.parametrize("value", ['"/tmp/junit.xml"', '"../junit.xml"', '"reports/../../x.xml"'])
def test_a_junit_report_must_be_inside_the_tree(tmp_path: Path, value: str) -> None:
    """[verify] junit is read from the tree the agents wrote: an absolute path or one with `..` is refused."""
    err = error(tmp_path, MINIMAL + f"junit = {value}\n")
    assert err.key == "verify.junit"
    assert "inside the tree" in err.message


def test_red_base_is_pause_or_continue(tmp_path: Path) -> None:
    """[verify] red_base takes "pause" (the default) or "continue"; anything else names the choices."""
    assert load(tmp_path, MINIMAL).verify.red_base == "pause"
    assert load(tmp_path, MINIMAL + 'red_base = "continue"\n').verify.red_base == "continue"
    err = error(tmp_path, MINIMAL + 'red_base = "ignore"\n')
    assert err.key == "verify.red_base"
