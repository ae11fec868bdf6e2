"""How the local server builds its services from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashion_search.api.app import create_app_from_env


@pytest.mark.parametrize(("configured", "expected"), [(None, 1), ("2", 2)])
def test_the_server_gives_each_request_serve_onnx_threads(
    configured: str | None,
    expected: int,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Requests run side by side in the server, so its sessions take ``serve_onnx_threads``
    (default 1), not ``onnx_threads`` (0 = every core), which the import keeps."""
    monkeypatch.setenv("FASHION_SEARCH_MODEL_DIR", str(tiny_model_dir))
    monkeypatch.setenv("FASHION_SEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FASHION_SEARCH_ONNX_THREADS", "0")
    if configured is not None:
        monkeypatch.setenv("FASHION_SEARCH_SERVE_ONNX_THREADS", configured)
    services = create_app_from_env().state.services
    assert services.settings.onnx_threads == expected
    for session in (services.encoder._text, services.encoder._image):
        assert session.get_session_options().intra_op_num_threads == expected
