"""Settings: environment variables, the TOML file, validation, derived paths, README coverage."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from appliance.config import PROJECT_ROOT, Settings

README = PROJECT_ROOT / "README.md"
# A settings-table row: "| `name` | `APPLIANCE_NAME` | default | description |".
_ROW = re.compile(r"^\|\s*`([a-z][a-z0-9_]*)`\s*\|\s*`(APPLIANCE_[A-Z0-9_]*)`\s*\|", re.MULTILINE)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No APPLIANCE_* variable from the caller's shell (the Makefile exports one) leaks in."""
    for key in list(os.environ):
        if key.startswith("APPLIANCE_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.data_dir == Path("./var")
    assert settings.policies_dir == PROJECT_ROOT / "policies"
    assert settings.log_level == "INFO"


def test_environment_variables_override_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("APPLIANCE_PORT", "9123")
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("APPLIANCE_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("APPLIANCE_DETECTOR_TIMEOUT_S", "2.5")
    settings = Settings()
    assert settings.port == 9123
    assert settings.data_dir == tmp_path
    assert settings.log_level == "DEBUG"
    assert settings.detector_timeout_s == 2.5


def test_keyword_arguments_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_PORT", "9123")
    assert Settings(port=9200).port == 9200


def test_toml_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text('port = 9300\ndefault_model = "gemma3-270m"\nmax_tokens = 64\n')
    monkeypatch.setenv("APPLIANCE_CONFIG_FILE", str(config))
    settings = Settings()
    assert settings.port == 9300
    assert settings.default_model == "gemma3-270m"
    assert settings.max_tokens == 64


def test_environment_beats_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text("port = 9300\nmax_tokens = 64\n")
    monkeypatch.setenv("APPLIANCE_CONFIG_FILE", str(config))
    monkeypatch.setenv("APPLIANCE_PORT", "9400")
    settings = Settings()
    assert settings.port == 9400
    assert settings.max_tokens == 64


def test_toml_file_with_unknown_key_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text("prot = 9300\n")
    monkeypatch.setenv("APPLIANCE_CONFIG_FILE", str(config))
    with pytest.raises(ValidationError) as info:
        Settings()
    assert info.value.errors()[0]["loc"] == ("prot",)


def test_toml_file_with_bad_value_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text('port = "high"\n')
    monkeypatch.setenv("APPLIANCE_CONFIG_FILE", str(config))
    with pytest.raises(ValidationError) as info:
        Settings()
    assert info.value.errors()[0]["loc"] == ("port",)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.port = 9000  # type: ignore[misc]
    assert settings.port == 8000


def test_unknown_keyword_is_rejected() -> None:
    with pytest.raises(ValidationError):
        Settings(prot=9000)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("APPLIANCE_PORT", "notanumber", "port"),
        ("APPLIANCE_PORT", "0", "port"),
        ("APPLIANCE_PORT", "65536", "port"),
        ("APPLIANCE_LOG_LEVEL", "TRACE", "log_level"),
        ("APPLIANCE_MAX_TOKENS", "0", "max_tokens"),
        ("APPLIANCE_DETECTOR_TIMEOUT_S", "-1", "detector_timeout_s"),
        ("APPLIANCE_GENERATION_QUEUE_SIZE", "-1", "generation_queue_size"),
    ],
)
def test_bad_environment_value_is_a_validation_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert [e["loc"] for e in info.value.errors()] == [(field,)]


def test_queue_size_zero_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_GENERATION_QUEUE_SIZE", "0")
    assert Settings().generation_queue_size == 0


def test_resolved_database_url_defaults_to_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    expected = (tmp_path / "data" / "appliance.db").resolve()
    assert settings.resolved_database_url == f"sqlite:///{expected}"


def test_resolved_database_url_is_absolute_for_relative_data_dir() -> None:
    url = Settings(data_dir=Path("relative/dir")).resolved_database_url
    assert url.startswith("sqlite:///")
    path = Path(url.removeprefix("sqlite:///"))
    assert path.is_absolute()
    assert path == (Path.cwd() / "relative" / "dir" / "appliance.db").resolve()


def test_explicit_database_url_wins(tmp_path: Path) -> None:
    url = "postgresql+psycopg://user:pass@localhost/appliance"
    assert Settings(data_dir=tmp_path, database_url=url).resolved_database_url == url


def test_empty_database_url_means_sqlite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("APPLIANCE_DATABASE_URL", "")
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path))
    assert Settings().resolved_database_url == f"sqlite:///{(tmp_path / 'appliance.db').resolve()}"


def test_resolved_models_dir_defaults_to_data_dir_models(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).resolved_models_dir == tmp_path / "models"


def test_explicit_models_dir_wins(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    assert Settings(data_dir=tmp_path, models_dir=other).resolved_models_dir == other


def test_every_field_has_a_description() -> None:
    undocumented = [name for name, f in Settings.model_fields.items() if not f.description]
    assert undocumented == []


def readme_setting_rows(text: str) -> list[tuple[str, str]]:
    """(name, variable) of README table rows like "| `data_dir` | `APPLIANCE_DATA_DIR` | ..."."""
    return _ROW.findall(text)


def test_readme_row_parser() -> None:
    text = (
        "| Setting | Variable | Default | Meaning |\n"
        "|---|---|---|---|\n"
        "| `data_dir` | `APPLIANCE_DATA_DIR` | `./var` | Where data lives. |\n"
        "|`port`|`APPLIANCE_PORT`|`8000`|Port.|\n"
        "| `smollm2-135m` (default) | a model table row |\n"
        "| `tiny` | a model named without a hyphen | x |\n"
        "Some prose mentioning | `not_a_row` | inline.\n"
    )
    assert readme_setting_rows(text) == [
        ("data_dir", "APPLIANCE_DATA_DIR"),
        ("port", "APPLIANCE_PORT"),
    ]


def test_readme_documents_every_setting() -> None:
    assert README.is_file(), f"{README} is missing"
    documented = {name for name, _ in readme_setting_rows(README.read_text(encoding="utf-8"))}
    fields = set(Settings.model_fields)
    assert documented == fields, (
        f"missing from README: {sorted(fields - documented)}; "
        f"not settings: {sorted(documented - fields)}"
    )


def test_readme_rows_name_the_environment_variable() -> None:
    assert README.is_file(), f"{README} is missing"
    rows = readme_setting_rows(README.read_text(encoding="utf-8"))
    mismatched = [(name, var) for name, var in rows if var != f"APPLIANCE_{name.upper()}"]
    assert rows
    assert mismatched == []
