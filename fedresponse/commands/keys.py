"""``fedresponse keys init --out KEYDIR``: the CKKS key ceremony (see docs/key-ceremony.md)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

keys_app = typer.Typer(help="CKKS key ceremony for the federation (run by the PI, offline).", no_args_is_help=True)


@keys_app.command("init")
def init(
    out: Path = typer.Option(..., "--out", help="Key directory to create (site/ and server/ below it)."),
    poly_modulus_degree: int = typer.Option(8192, "--poly-modulus-degree", help="CKKS ring degree N."),
    coeff_mod_bit_sizes: str = typer.Option(
        "60,60", "--coeff-mod-bit-sizes", help="Comma-separated prime sizes in bits (last = special prime)."
    ),
    scale_bits: int = typer.Option(40, "--scale-bits", help="log2 of the CKKS scale."),
    max_sites: int = typer.Option(32, "--max-sites", help="Most sites whose updates may be summed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing key files (orphans old ciphertexts)."),
) -> None:
    """Create the CKKS context: KEYDIR/site/secret.ctx (mode 0600) and KEYDIR/server/public.ctx (no secret key)."""
    from privacy.ckks import PUBLIC_CONTEXT, SECRET_CONTEXT, CkksParameters, write_key_files
    from privacy.exceptions import PrivacyError

    console = Console()
    try:
        sizes = tuple(int(part) for part in coeff_mod_bit_sizes.split(","))
    except ValueError:
        console.print(f"[red]--coeff-mod-bit-sizes must be integers separated by commas, got {coeff_mod_bit_sizes!r}")
        raise typer.Exit(code=2) from None
    try:
        params = CkksParameters(poly_modulus_degree, sizes, scale_bits, max_sites)
        info = write_key_files(out, params, overwrite=overwrite)
    except PrivacyError as exc:
        console.print(f"[red]keys init failed:[/] {exc}")
        raise typer.Exit(code=1) from None
    console.print(f"[green]key ceremony {info.key_id}[/] N={params.poly_modulus_degree}, "
                  f"primes={list(params.coeff_mod_bit_sizes)} bits, scale=2^{params.scale_bits}")
    console.print(f"  sites  (offline, mode 0600): {out / SECRET_CONTEXT}")
    console.print(f"  server (no secret key):     {out / PUBLIC_CONTEXT}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
