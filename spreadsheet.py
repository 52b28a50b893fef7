"""CSV cells that no spreadsheet runs as a formula, and their text back.

Class names, defect folder names and defect labels come from folders and files users made; a
name such as =HYPERLINK(...) or +cmd|' /C calc'!A0 would be a live formula in Excel or
LibreOffice. Torch-free, so the preparation scripts use it too.
"""

# a spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...), +cmd|..)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text):
    """-0.5 or 1e-3, written by us as numbers; ' -1' or '\t1' are not (a tab leads a formula)."""
    if text != text.strip():
        return False
    try:
        float(text)
        return True
    except ValueError:
        return False


def spreadsheet_safe(value):
    """A CSV cell no spreadsheet executes: text starting like a formula gets a leading quote
    (the usual rule; spreadsheets show the text without it). Numbers such as -0.5 stay numbers.
    A quote already in front of such text is doubled, so csv_cell_text gives the text back."""
    text = str(value)
    if text.lstrip("'").startswith(FORMULA_STARTS) and not _is_number(text):
        return "'" + text
    return text


def csv_cell_text(cell):
    """The text of a cell written by spreadsheet_safe (the inverse: one leading quote off)."""
    if cell.startswith("'") and cell.lstrip("'").startswith(FORMULA_STARTS):
        return cell[1:]
    return cell
