"""Command line: `python -m service serve | worker | migrate | exit | export | keys create`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import sys
from typing import Any

from pydantic import ValidationError

from service.db import Database, upgrade
from service.engines.base import EngineConfigError
from service.projects import service as projects
from service.settings import Settings


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Presidio logs every recogniser it loads and every language it is asked for, at INFO.
    logging.getLogger("presidio-analyzer").setLevel(max(logging.WARNING, logging.root.level))


def _serve(settings: Settings, host: str, port: int) -> None:
    from service.app import create_app
    from service.server import ServiceServer, server_config

    asyncio.run(upgrade(settings.database_url))
    app = create_app(settings)
    config = server_config(app, host=host, port=port, log_level=settings.log_level)
    ServiceServer(config, app).run()


async def _work(settings: Settings) -> None:
    import anyio

    from service.engines import build_engines
    from service.exports.builder import ExportBuilder
    from service.studio.learning import Watcher
    from service.studio.service import LazyRedactor

    await upgrade(settings.database_url)
    database = Database(settings.database_url)
    engines = build_engines(settings)
    stopping = anyio.Event()  # never set: the workers run until interrupted
    # The studio's watcher goes with the workers: it starts, evaluates and promotes the
    # retrainings that feedback asks for, wherever `serve` runs without embedded workers.
    watcher = Watcher(
        database=database,
        engines=engines,
        settings=settings,
        redactor=LazyRedactor(),
        interval=settings.studio_poll_seconds,
    )
    try:
        async with anyio.create_task_group() as workers:
            for engine in engines:
                logging.getLogger(__name__).info("%s engine worker started", engine.name)
                workers.start_soon(
                    functools.partial(engine.run, database=database, stopping=stopping)
                )
            workers.start_soon(watcher.run)
            # Model exports too: built where the workers (and the models' weights) are.
            workers.start_soon(
                ExportBuilder(database=database, engines=engines, settings=settings).run
            )
    finally:
        await engines.aclose()
        await database.dispose()


async def _create_key(settings: Settings, project_name: str, admin: bool, name: str) -> str:
    await upgrade(settings.database_url)
    database = Database(settings.database_url)
    try:
        async with database.session() as session:
            project = await projects.get_project_by_name(session=session, name=project_name)
            if project is None:
                project = await projects.create_project(session=session, name=project_name)
                print(f"created project {project.name} ({project.id})")
            new = await projects.create_api_key(
                session=session, project=project, name=name, admin=admin
            )
            kind = "admin key" if admin else "key"
            print(f"created {kind} {new.key.id} in project {project.name} ({project.id})")
            return new.value
    finally:
        await database.dispose()


async def _exit(settings: Settings, args: argparse.Namespace) -> int:
    """Inventory, import and record a provider's fine-tuning data, with progress bars."""
    import json

    from tqdm import tqdm

    from service.engines import build_engines, provider_exit
    from service.engines.upstream.exit import ExitRun, run_exit
    from service.errors import APIError

    await upgrade(settings.database_url)
    database = Database(settings.database_url)
    engines = build_engines(settings)
    try:
        try:
            exit_ = provider_exit(engines, args.provider, database)
        except APIError as error:
            print(error.message, file=sys.stderr)
            return 2
        async with database.session() as session:
            project = await projects.get_project_by_name(session=session, name=args.project)
            if project is None:
                project = await projects.create_project(session=session, name=args.project)
        inventory = await exit_.inventory()
        shutdowns = sorted({m["shutdown_date"] for m in inventory["models"] if m["shutdown_date"]})
        print(
            f"{args.provider}: {len(inventory['files'])} files, {len(inventory['jobs'])} jobs, "
            f"{len(inventory['models'])} fine-tuned models"
            + (f" (shutting down on {', '.join(shutdowns)})" if shutdowns else "")
        )
        if args.inventory_only:
            print(json.dumps(inventory, indent=2))
            return 0
        bars: dict[str, Any] = {}

        def progress(step: str, done: int, total: int) -> None:
            bar = bars.get(step)
            if bar is None:
                bar = bars[step] = tqdm(total=total, desc=step, unit=step.rstrip("s"))
            bar.update(done - bar.n)

        steps = [s for s in ("import", "record") if s in args.steps.split(",")]
        run = ExitRun(provider=args.provider, project_id=project.id, steps=steps)
        run.progress = progress  # type: ignore[method-assign]
        await run_exit(exit_, run, prompts_file=args.prompts_file)
        for bar in bars.values():
            bar.close()
        print(json.dumps(run.as_dict()["report"], indent=2))
        if run.error:
            print(run.error, file=sys.stderr)
            return 1
        return 0
    finally:
        await engines.aclose()
        await database.dispose()


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    """Build (or reuse) a model's export, with a progress bar, and copy it to `--output`."""
    import shutil
    from pathlib import Path

    from tqdm import tqdm

    from service.engines import build_engines
    from service.errors import APIError
    from service.exports import service as exports
    from service.exports.builder import ExportBuilder
    from service.exports.models import ModelExport
    from service.models.service import find_derived

    await upgrade(settings.database_url)
    database = Database(settings.database_url)
    engines = build_engines(settings)
    try:
        async with database.session() as session:
            derived = await find_derived(session, args.model)
            if derived is None:
                print(
                    f"No fine-tuned model or checkpoint is called {args.model!r}.", file=sys.stderr
                )
                return 2
            try:
                await exports.exportable(
                    session=session,
                    engines=engines,
                    project_id=derived.project_id,
                    model=args.model,
                    fmt=args.format,
                )
            except APIError as error:
                print(error.message, file=sys.stderr)
                return 2
            row = await exports.request_export(
                session=session, files_dir=settings.files_dir, derived=derived, fmt=args.format
            )
        builder = ExportBuilder(database=database, engines=engines, settings=settings)
        with tqdm(total=100, unit="%", desc=f"{args.format} export") as bar:
            while row.status not in ("ready", "failed"):
                # Build it here, or follow the builder that holds it (a running `serve`).
                task = asyncio.create_task(builder.build_next(row.id))
                while not task.done():
                    await asyncio.sleep(0.5)
                    async with database.session() as session:
                        current = await session.get(ModelExport, row.pk)
                        if current is not None:
                            bar.update(round(current.progress * 100) - bar.n)
                if not task.result():
                    await asyncio.sleep(1.0)
                async with database.session() as session:
                    current = await session.get(ModelExport, row.pk)
                    if current is None:
                        print("The export was deleted meanwhile.", file=sys.stderr)
                        return 1
                    row = current
            bar.update(100 - bar.n)
        if row.status == "failed":
            print(f"The export failed: {row.error}", file=sys.stderr)
            return 1
        output = Path(args.output or row.filename)
        shutil.copyfile(exports.archive_path(settings.files_dir, row), output)
        print(f"{output} ({row.bytes} bytes, sha256 {row.sha256})")
        return 0
    finally:
        await engines.aclose()
        await database.dispose()


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="apply migrations and serve the API")
    serve.add_argument("--host", help="address to bind (default FT_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default FT_PORT or 8000)")
    commands.add_parser("migrate", help="apply database migrations up to head")
    commands.add_parser("worker", help="run the engines' workers against the same database")
    leave = commands.add_parser(
        "exit",
        help="leave a provider: inventory, import its files and jobs, record its models",
    )
    leave.add_argument("--provider", required=True, help="a provider of FT_PROVIDERS")
    leave.add_argument("--project", default="default", help="project to import into")
    leave.add_argument("--steps", default="import,record", help="comma-separated: import, record")
    leave.add_argument("--prompts-file", help="a file id whose prompts every model answers")
    leave.add_argument(
        "--inventory-only", action="store_true", help="print the inventory as JSON and stop"
    )
    export = commands.add_parser(
        "export", help="write a fine-tuned model as an adapter, a merged model or GGUF"
    )
    export.add_argument("model", help="a fine-tuned model or checkpoint name")
    export.add_argument("--format", choices=["adapter", "merged", "gguf"], default="merged")
    export.add_argument("--output", help="the archive's path (default: its name, here)")
    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create an API key; prints it last")
    create.add_argument("--project", required=True, help="project name (created if missing)")
    create.add_argument("--admin", action="store_true", help="an admin key")
    create.add_argument("--name", default="cli", help="a label for the key")
    args = parser.parse_args(argv)

    try:
        settings = Settings()
    except ValidationError as error:
        # Without the values: FT_PROVIDERS and FT_BOOTSTRAP_API_KEY hold secrets.
        for problem in error.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in problem["loc"])
            print(f"invalid setting FT_{where.upper()}: {problem['msg']}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    try:
        return _run(args, settings)
    except EngineConfigError as error:
        print(f"invalid configuration: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command in ("serve", "worker"):
        # Before the engines are built: they discover model folders when they are created.
        from service.engines import prepare

        prepare(settings)
    if args.command == "serve":
        _serve(settings, args.host or settings.host, args.port or settings.port)
    elif args.command == "worker":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_work(settings))
    elif args.command == "exit":
        return asyncio.run(_exit(settings, args))
    elif args.command == "export":
        return asyncio.run(_export(settings, args))
    elif args.command == "migrate":
        asyncio.run(upgrade(settings.database_url))
        print("database is at the latest revision")
    else:
        # The key is the last line of stdout so scripts can take it with `tail -n 1`.
        print(asyncio.run(_create_key(settings, args.project, args.admin, args.name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
