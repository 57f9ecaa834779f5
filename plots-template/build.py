"""Write the HTML page that `dvc plots show` fills (.dvc/plots/page.html, set in .dvc/config).

Why generated: DVC reads one template file and substitutes only its placeholders, so the vendored scripts
must be inside that file for the page to draw offline; the scripts stay byte-identical to their npm builds
in vendor/ (checkable against the registry), and tests/test_dvc_plots.py fails when the page is stale.

    python plots-template/build.py          # after replacing a file in vendor/ or editing page.html
"""

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / ".dvc" / "plots" / "page.html"
MARKER = re.compile(r"<!-- inline: (vendor/[\w.-]+\.js) -->")
SOURCE_MAP = re.compile(r"\n//# sourceMappingURL=\S+\s*$")


def build() -> str:
    """page.html with each `<!-- inline: vendor/X.js -->` marker replaced by that script, inlined."""

    def inline(match: re.Match[str]) -> str:
        code = (HERE / match.group(1)).read_text(encoding="utf-8")
        code = SOURCE_MAP.sub("\n", code)  # the .map file is not shipped; browsers would ask for it
        if "</script" in code.lower():
            raise ValueError(f"{match.group(1)} contains '</script' and cannot be inlined")
        return f"<script>/* {match.group(1)} */\n{code}</script>"

    return MARKER.sub(inline, (HERE / "page.html").read_text(encoding="utf-8"))


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(build(), encoding="utf-8")
    print(f"wrote {OUT}")
