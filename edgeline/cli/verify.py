"""``edgeline verify BUNDLE``: signature, hashes, load and self-test."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_agent.bundle import verify_bundle
from edgeline.cli.errors import error_document
from edgeline.cli.options import json_option
from edgeline.core.errors import EdgelineError
from edgeline.core.protocol.signing import TrustStore


@click.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--trust",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("keys/trust.json"),
    show_default=True,
    help="Trust store with the root public keys (made by 'edgeline keys init').",
)
@click.option("--no-expiry", is_flag=True, help="Accept an expired manifest (for inspecting old bundles).")
@json_option
def verify(bundle: Path, trust: Path, no_expiry: bool, as_json: bool) -> None:
    """Check BUNDLE: signature and certificate chain, model size and sha256, that ONNX Runtime loads
    the model, and that it reproduces the manifest's self-test vectors. Exits 1 on any failure."""
    try:
        store = TrustStore.load(trust)
        summary = verify_bundle(bundle, store, check_expiry=not no_expiry)
    except EdgelineError as exc:
        if as_json:
            click.echo(json.dumps(error_document(exc)))
            raise SystemExit(1) from exc
        raise click.ClickException(f"{bundle}: REJECTED: {exc}") from exc
    if as_json:
        click.echo(json.dumps({"ok": True, **summary}))
        return
    click.echo(
        f"{bundle}: OK  {summary['name']} v{summary['version']}  {summary['quantization']}  "
        f"sha256 {summary['sha256'][:12]}  signed by {summary['signed_by']}  "
        f"self-test {summary['selftest_cases']} cases, max deviation {summary['selftest_max_deviation']:.2e}"
    )
