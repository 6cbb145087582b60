"""Settings: defaults, the data dir's identify.toml, environment overrides, and refusals."""

import pytest

from identify.config import FusionConfig, load_settings
from identify.errors import IdentifyError


def test_defaults_put_sqlite_in_the_data_dir(tmp_path):
    settings = load_settings({"IDENTIFY_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'identify.db'}"
    assert settings.indexes_dir == tmp_path / "indexes"
    assert settings.fusion == FusionConfig()


def test_file_then_environment_override(tmp_path):
    (tmp_path / "identify.toml").write_text('database_url = "sqlite:///x.db"\n[fusion]\nk = 7\ntemperature = 0.2\n')
    settings = load_settings({"IDENTIFY_DATA_DIR": str(tmp_path), "IDENTIFY_TEMPERATURE": "0.5"})
    assert settings.database_url == "sqlite:///x.db"
    assert (settings.fusion.k, settings.fusion.temperature) == (7, 0.5)


@pytest.mark.parametrize("env", [{"IDENTIFY_K": "many"}, {"IDENTIFY_WEIGHT_KNN": "1.5"}, {"IDENTIFY_TEMPERATURE": "0"}])
def test_bad_values_are_refused_with_a_code(tmp_path, env):
    with pytest.raises(IdentifyError) as error:
        load_settings({"IDENTIFY_DATA_DIR": str(tmp_path), **env})
    assert error.value.code == "bad_config"


def test_broken_toml_is_refused(tmp_path):
    (tmp_path / "identify.toml").write_text("[fusion\n")
    with pytest.raises(IdentifyError, match="not valid TOML"):
        load_settings({"IDENTIFY_DATA_DIR": str(tmp_path)})
