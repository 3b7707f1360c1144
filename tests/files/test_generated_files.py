"""Files the service writes itself (a job's results) appear like uploads and download intact."""

from __future__ import annotations

from service.files import service as files
from tests.factories import make_tenant


async def test_results_file_is_listed_and_downloadable(client, database, settings):
    tenant = await make_tenant(database)
    csv = b"step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,0.9,0.5,,\n"
    async with database.session() as session:
        row = await files.create_file_from_bytes(
            session=session,
            project_id=tenant.project_id,
            files_dir=settings.files_dir,
            filename="step_metrics.csv",
            purpose="fine-tune-results",
            content=csv,
        )
    listed = (
        await client.get(
            "/v1/files", headers=tenant.headers, params={"purpose": "fine-tune-results"}
        )
    ).json()["data"]
    assert [f["id"] for f in listed] == [row.id]
    assert listed[0]["bytes"] == len(csv) and listed[0]["filename"] == "step_metrics.csv"
    content = await client.get(f"/v1/files/{row.id}/content", headers=tenant.headers)
    assert content.content == csv
    assert not list(settings.files_dir.glob("*.tmp"))
