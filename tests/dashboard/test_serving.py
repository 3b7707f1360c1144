"""The dashboard as the app serves it: its page and assets at / without a key, headers that keep
it to its own origin, the API's own answers everywhere else, and a clear page when not built."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.databases import SQLITE_ONLY
from tests.factories import make_tenant

pytestmark = SQLITE_ONLY


@pytest.fixture
def built(tmp_path: Path) -> Path:
    """A built dashboard folder: an index page and one hashed asset."""
    folder = tmp_path / "dashboard"
    (folder / "assets").mkdir(parents=True)
    (folder / "index.html").write_text(
        '<!doctype html><script type="module" src="/assets/index-abc123.js"></script>'
    )
    (folder / "assets" / "index-abc123.js").write_text("console.log('dashboard');\n")
    (tmp_path / "secret.txt").write_text("not an asset")
    return folder


async def _client_for(settings: Settings, engines, folder: Path):
    app = create_app(settings.model_copy(update={"dashboard_dir": folder}), engines=engines)
    return app, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_the_built_page_and_its_assets_are_served_without_a_key(settings, engines, built):
    app, client = await _client_for(settings, engines, built)
    async with app.router.lifespan_context(app), client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "/assets/index-abc123.js" in page.text
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert page.headers["cache-control"] == "no-cache"

        asset = await client.get("/assets/index-abc123.js")
        assert asset.status_code == 200
        assert asset.text == "console.log('dashboard');\n"
        assert "immutable" in asset.headers["cache-control"]


@pytest.mark.parametrize(
    "path",
    ["/assets/missing.js", "/assets/..%2Fsecret.txt", "/assets/.hidden", "/assets/../index.html"],
)
async def test_anything_else_under_assets_is_a_404_envelope(settings, engines, built, path):
    app, client = await _client_for(settings, engines, built)
    async with app.router.lifespan_context(app), client:
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert "not an asset" not in response.text


async def test_a_link_out_of_the_assets_folder_is_not_followed(settings, engines, built):
    (built / "assets" / "link.js").symlink_to(built.parent / "secret.txt")
    app, client = await _client_for(settings, engines, built)
    async with app.router.lifespan_context(app), client:
        response = await client.get("/assets/link.js")
        assert response.status_code == 404
        assert "not an asset" not in response.text


async def test_the_api_keeps_its_own_answers_beside_the_dashboard(
    settings, engines, built, database
):
    app, client = await _client_for(settings, engines, built)
    async with app.router.lifespan_context(app), client:
        unknown = await client.get("/v1/no-such-thing")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["message"] == "Invalid URL (GET /v1/no-such-thing)"
        assert (await client.get("/v1/fine_tuning/jobs")).status_code == 401
        assert (await client.post("/")).status_code == 405
        document = (await client.get("/openapi.json")).json()
        assert "/" not in document["paths"] and "/assets/{name}" not in document["paths"]


async def test_without_a_build_the_page_says_how_to_build_it(settings, engines, tmp_path, database):
    app, client = await _client_for(settings, engines, tmp_path / "never-built")
    async with app.router.lifespan_context(app), client:
        page = await client.get("/")
        assert page.status_code == 200
        assert "The dashboard is not built" in page.text
        assert "make dashboard" in page.text
        tenant = await make_tenant(app.state.database)
        jobs = await client.get("/v1/fine_tuning/jobs", headers=tenant.headers)
        assert jobs.status_code == 200
