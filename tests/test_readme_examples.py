"""The code examples in README.md and docs/configuration.md run as written.

A block that builds a web app (``SessionMiddleware``) is then served: a login through it must
set the cookie and store the session in the harness's Redis.

Each ```python block is compiled as it stands, with top-level ``await``/``async with`` allowed
(the way the asyncio REPL runs them), in a directory that holds the files the examples name:
``config.yml`` and ``configuration.yml``. Those files are README's own ```yaml example with
only its ``redis`` section swapped for the server this harness started, so an example that
opens a store talks to that server and never to a Redis at 127.0.0.1:6379.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from redis_session import SessionConfig, load_config
from redis_session._config_loading import SECRET_FILE_VARIABLES

from .asgi_helpers import client, cookie_attributes, lifespan
from .servers import RedisProcess

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
#: The files the examples read, by the names they use.
CONFIG_FILES = ("config.yml", "configuration.yml")

_FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)


def code_blocks(path: Path, lang: str) -> list[tuple[str, str]]:
    """``(where, code)`` for each fenced block in ``lang``; ``where`` is ``FILE:LINE``."""
    text = path.read_text(encoding="utf-8")
    return [
        (f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}", match["code"])
        for match in _FENCE.finditer(text)
        if match["lang"] == lang
    ]


def readme_yaml() -> dict[str, Any]:
    (block,) = code_blocks(README, "yaml")
    document = yaml.safe_load(block[1])
    assert isinstance(document, dict)
    return document


async def run_example(where: str, code: str, namespace: dict[str, Any]) -> None:
    """Run one block the way the asyncio REPL would: top-level ``await`` is allowed.

    A traceback names the document and the line in it where the failing statement stands.
    """
    filename, _, fence_line = where.rpartition(":")
    padded = "\n" * int(fence_line) + code
    compiled = compile(padded, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(compiled, namespace)
    if inspect.iscoroutine(result):
        await result


EXAMPLES = code_blocks(README, "python") + code_blocks(CONFIG_DOC, "python")


def test_the_docs_have_examples_to_run() -> None:
    # A broken fence pattern must not turn this module into a test of nothing.
    assert [where for where, _ in EXAMPLES if where.startswith("README")]
    assert [where for where, _ in EXAMPLES if where.startswith("docs")]
    assert "open_session_store" in EXAMPLES[0][1]


def test_the_web_integration_fits_in_ten_lines() -> None:
    """README's "Use it in a web app" block: the whole integration, at most 10 lines of code."""
    (code,) = [code for _, code in EXAMPLES if "SessionMiddleware" in code]
    assert len([line for line in code.splitlines() if line.strip()]) <= 10


def test_readme_yaml_example_is_a_valid_config() -> None:
    """README's ```yaml block, exactly as printed, passes every config rule."""
    cfg = load_config(readme_yaml(), environ={})
    assert isinstance(cfg, SessionConfig)
    assert cfg.redis is not None
    assert cfg.redis.high_availability is not None


@pytest.fixture
def example_dir(
    redis: RedisProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> RedisProcess:
    """A working directory whose config files are README's YAML aimed at ``redis``."""
    host, port = redis.address
    assert (host, port) != ("127.0.0.1", 6379), "the examples must not reach a shared Redis"
    document = readme_yaml()
    document["session"]["redis"] = redis.redis_section()
    for name in CONFIG_FILES:
        (tmp_path / name).write_text(yaml.safe_dump(document), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for variable in SECRET_FILE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return redis


async def serve_web_example(app: Any, redis: RedisProcess) -> None:
    """Log in through the README's web app, as a browser on example.com would."""
    async with lifespan(app), client(app, "https://example.com") as http:
        response = await http.post("/login", params={"user": "ann"})
    assert response.status_code == 200
    assert response.json() == {"user": "ann"}
    (header,) = response.headers.get_list("set-cookie")
    name, value, attributes = cookie_attributes(header)
    assert name == readme_yaml()["session"]["name"]
    assert value
    assert {"httponly", "secure", "samesite", "path", "expires", "max-age"} <= set(attributes)
    # The session went to the harness's Redis (the one config.yml names).
    assert redis.admin().dbsize() == 1


@pytest.mark.anyio
@pytest.mark.parametrize(("where", "code"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
async def test_example_runs(where: str, code: str, example_dir: RedisProcess) -> None:
    namespace: dict[str, Any] = {"__name__": "__example__"}
    await run_example(where, code, namespace)
    if "SessionMiddleware" in code:
        await serve_web_example(namespace["app"], example_dir)
    elif "open_session_store" in code:
        # It used the harness's server: its load found the session it had just created.
        stats = example_dir.admin().info("stats")
        assert stats["keyspace_hits"] >= 1
