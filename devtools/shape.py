"""The service-shape table of docs/ARCHITECTURE.md, generated from the code.

    python -m devtools.shape          # rewrite the table between its markers
    python -m devtools.shape --check  # exit 1 when the committed table is stale (tests/unit/test_architecture.py)

Each row is one module of a service and the first line of its docstring, so the
table says what the code says: a module without a docstring, or a table that
lists a module that is gone, fails the check.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
SERVICES = ("auth", "socket_gateway", "file_uploader", "file_service_manager", "pool_aggregator")
BEGIN, END = "<!-- service-modules:begin (python -m devtools.shape) -->", "<!-- service-modules:end -->"


def summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(), filename=str(path)))
    if not doc:
        raise SystemExit(f"{path.relative_to(ROOT)} has no docstring: say what the module is for")
    return " ".join(doc.strip().split("\n\n")[0].split()).replace("|", "\\|")


def table() -> str:
    lines = []
    for service in SERVICES:
        lines += [f"**{service}**", "", "| module | what it is |", "|---|---|"]
        package = ROOT / "services" / service
        for path in sorted(package.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            lines.append(f"| `{path.relative_to(package)}` | {summary(path)} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOC.relative_to(ROOT)} lacks the markers {BEGIN!r} ... {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when stale")
    args = parser.parse_args(argv)
    current = DOC.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"{DOC.relative_to(ROOT)}: the service-modules table is stale; run python -m devtools.shape")
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
