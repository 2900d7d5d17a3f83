"""``python -m tfconv.analyses`` prints docs/analyses.md's table of analyses (paste it between the markers)."""
from . import docs_table

print(docs_table())
