"""Rewrite README.md's config reference table from the config models (`make config-reference`)."""

from pathlib import Path

from stream.cli import reference_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
HEADER = "| key | default | description |"

text = README.read_text()
start = text.index(HEADER)
end = text.index("\n\n", start)
README.write_text(text[:start] + reference_markdown() + text[end:])
print(f"updated {README}")
