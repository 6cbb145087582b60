"""The command line's own surface: help, the db subcommands, the demo model converter."""

from click.testing import CliRunner

from identify.cli import main


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_help_lists_every_subcommand():
    text = run("--help").output
    for command in ("build-index", "predict", "convert-demo-model", "db"):
        assert command in text


def test_db_upgrade_current_downgrade(data_dir):
    assert "empty" in run("db", "current").output
    assert run("db", "upgrade").output.strip() == "database at revision 0002"
    assert run("db", "current").output.strip() == "0002"
    assert run("db", "downgrade", "base").output.strip() == "database at revision base (empty)"


def test_unreachable_database_is_one_line(data_dir):
    result = run("db", "upgrade", env={"IDENTIFY_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.exit_code == 1 and "error: database_unavailable:" in result.stderr
    assert "Traceback" not in result.output


def test_convert_demo_model_writes_into_the_data_dir_by_default(data_dir):
    result = run("convert-demo-model")
    assert result.exit_code == 0
    assert (data_dir / "models" / "efficientnet_lite0_imagenet.pt").is_file()
