"""`synctrack token new|hash|mint`: make admin tokens and their hashes, mint company-scoped tokens. Tokens go
to stdout alone, explanations to stderr; a token is read from stdin or a hidden prompt, never from the command
line (where `ps` and shell history would keep it)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import typer

from schemas.settings import Settings, parse_duration
from service.security.tokens import MIN_ADMIN_TOKEN_LENGTH, RIGHTS, hash_token, new_admin_token

app = typer.Typer(name="token", help="Admin tokens and company-scoped tokens.", no_args_is_help=True)


def _read_token() -> str:
    token = str(typer.prompt("Token", hide_input=True)) if sys.stdin.isatty() else sys.stdin.readline()
    return token.strip()


@app.command("hash")
def hash_command() -> None:
    """Print the hash of a token read from stdin (or typed at a hidden prompt) for SYNCTRACK_ADMIN_TOKEN_HASHES."""
    token = _read_token()
    if len(token) < MIN_ADMIN_TOKEN_LENGTH:
        typer.echo(
            f"error: an admin token must be at least {MIN_ADMIN_TOKEN_LENGTH} random characters; "
            "`synctrack token new` makes one",
            err=True,
        )
        raise typer.Exit(2)
    typer.echo(hash_token(token))


@app.command("new")
def new_command() -> None:
    """Make a new random admin token: the token on stdout, its hash (for the server) on stderr."""
    token = new_admin_token()
    typer.echo(f"SYNCTRACK_ADMIN_TOKEN_HASHES entry: {hash_token(token)}", err=True)
    typer.echo("Keep the token below secret; the server needs only the hash.", err=True)
    typer.echo(token)


@app.command("mint")
def mint_command(
    company: str = typer.Option(..., "--company", help="The company the token is limited to."),
    ttl: str = typer.Option("1h", "--ttl", help="Lifetime: seconds, or 30m, 1h, 7d."),
    rights: str = typer.Option("read", "--rights", help=f"Comma-separated, among {','.join(RIGHTS)}."),
) -> None:
    """Mint a company-scoped token with SYNCTRACK_TOKEN_SIGNING_KEY (as `POST /v1/tokens` does)."""
    from schemas.errors import ApiError
    from service.security.tokens import mint

    seconds = parse_duration(ttl)
    try:
        seconds = float(seconds)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        typer.echo(f"error: --ttl {ttl!r} is not a duration (e.g. 3600, 30m, 1h, 7d)", err=True)
        raise typer.Exit(2) from None
    wanted = [part.strip() for part in rights.split(",") if part.strip()]
    unknown = sorted(set(wanted) - set(RIGHTS))
    if unknown or not wanted or seconds < 60:
        typer.echo(f"error: rights are among {', '.join(RIGHTS)}, and --ttl is at least 60 s", err=True)
        raise typer.Exit(2)
    try:
        out = mint(Settings(), company, wanted, seconds)
    except ApiError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from None
    expires = datetime.fromtimestamp(out.expires_at.timestamp(), UTC).isoformat().replace("+00:00", "Z")
    typer.echo(f"company {out.company_id}, rights {','.join(out.rights)}, expires {expires}", err=True)
    typer.echo(out.token)
