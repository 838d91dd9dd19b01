"""`python -m fakelite.serve --model M ...`: the same as `fakelite serve`."""

import typer

from fakelite.serve.command import serve_command

if __name__ == "__main__":
    typer.run(serve_command)
