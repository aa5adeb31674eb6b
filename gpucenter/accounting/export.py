"""Export report records as CSV, JSON or XLSX.

XLSX is written directly (a zip of four small XML parts, inline strings, numbers as numbers)
rather than through a spreadsheet library: reports are flat tables, and one dependency less
is one less thing to patch on an air-gapped government network.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from enum import StrEnum
from xml.sax.saxutils import escape

Record = Mapping[str, object]


class Format(StrEnum):
    CSV = "csv"
    JSON = "json"
    XLSX = "xlsx"


MEDIA_TYPES = {
    Format.CSV: "text/csv; charset=utf-8",
    Format.JSON: "application/json",
    Format.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def _columns(records: Sequence[Record]) -> list[str]:
    cols: list[str] = []
    for r in records:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def to_csv(records: Sequence[Record]) -> bytes:
    """UTF-8 with a byte-order mark, so that Excel opens Korean organisation names right."""
    buf = io.StringIO()
    cols = _columns(records)
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({c: r.get(c, "") for c in cols})
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def to_json(records: Sequence[Record]) -> bytes:
    return json.dumps(list(records), ensure_ascii=False, default=str, indent=1).encode("utf-8")


def _col_letter(i: int) -> str:
    out = ""
    i += 1
    while i:
        i, rem = divmod(i - 1, 26)
        out = chr(65 + rem) + out
    return out


def _cell(ref: str, v: object) -> str:
    if isinstance(v, bool) or v is None:
        v = "" if v is None else str(v)
    if isinstance(v, int | float):
        return f'<c r="{ref}"><v>{v!r}</v></c>'
    return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{escape(str(v))}</t></is></c>'


def to_xlsx(records: Sequence[Record], sheet: str = "report") -> bytes:
    """A single-sheet workbook: a header row, then one row per record."""
    cols = _columns(records)
    rows = [cols] + [[r.get(c, "") for c in cols] for r in records]
    body = "".join(
        f'<row r="{i + 1}">'
        + "".join(_cell(f"{_col_letter(j)}{i + 1}", v) for j, v in enumerate(row))
        + "</row>"
        for i, row in enumerate(rows)
    )
    ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    pkg = "http://schemas.openxmlformats.org/package/2006"
    parts = {
        "[Content_Types].xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="{pkg}/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/'
            'sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.'
            'spreadsheetml.worksheet+xml"/></Types>'
        ),
        "_rels/.rels": (
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{pkg}/relationships">'
            f'<Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>"
        ),
        "xl/workbook.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{ns}" xmlns:r="{rel}">'
            f'<sheets><sheet name="{escape(sheet[:31])}" sheetId="1" r:id="rId1"/></sheets>'
            "</workbook>"
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{pkg}/relationships">'
            f'<Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/>'
            "</Relationships>"
        ),
        "xl/worksheets/sheet1.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{ns}">'
            f"<sheetData>{body}</sheetData></worksheet>"
        ),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, xml in parts.items():
            zf.writestr(name, xml)
    return buf.getvalue()


def render(records: Sequence[Record], fmt: Format, sheet: str = "report") -> bytes:
    if fmt is Format.CSV:
        return to_csv(records)
    if fmt is Format.XLSX:
        return to_xlsx(records, sheet)
    return to_json(records)
