"""Command line: `python -m service serve | worker | migrate | keys create`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import sys

from service.db import Database, upgrade
from service.projects import service as projects
from service.settings import Settings


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


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

    await upgrade(settings.database_url)
    database = Database(settings.database_url)
    engines = build_engines(settings)
    stopping = anyio.Event()  # never set: the workers run until interrupted
    try:
        async with anyio.create_task_group() as workers:
            for engine in engines:
                logging.getLogger(__name__).info("%s engine worker started", engine.name)
                workers.start_soon(
                    functools.partial(engine.run, database=database, stopping=stopping)
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


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="apply migrations and serve the API")
    serve.add_argument("--host", help="address to bind (default FT_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default FT_PORT or 8000)")
    commands.add_parser("migrate", help="apply database migrations up to head")
    commands.add_parser("worker", help="run the engines' workers against the same database")
    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create an API key; prints it last")
    create.add_argument("--project", required=True, help="project name (created if missing)")
    create.add_argument("--admin", action="store_true", help="an admin key")
    create.add_argument("--name", default="cli", help="a label for the key")
    args = parser.parse_args(argv)

    settings = Settings()
    _configure_logging(settings.log_level)
    if args.command in ("serve", "worker"):
        # Before the engines are built: they discover model folders when they are created.
        from service.engines import prepare

        prepare(settings)
    if args.command == "serve":
        _serve(settings, args.host or settings.host, args.port or settings.port)
    elif args.command == "worker":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_work(settings))
    elif args.command == "migrate":
        asyncio.run(upgrade(settings.database_url))
        print("database is at the latest revision")
    else:
        # The key is the last line of stdout so scripts can take it with `tail -n 1`.
        print(asyncio.run(_create_key(settings, args.project, args.admin, args.name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
