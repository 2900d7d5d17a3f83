"""CITATION.cff: tfconv's own citation (Citation File Format 1.2.0) with the paper under `references:`.
Its version and licence are pyproject.toml's, and the paper's authors and arXiv id are the README's BibTeX
entry's, so the three cannot drift apart.  (The file was checked once against the official 1.2.0 JSON
schema, https://citation-file-format.github.io/1.2.0/schema.json; the schema is not vendored here.)"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def cff() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text())


def test_citation_cff_describes_tfconv_at_its_version():
    c, project = cff(), tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert c["cff-version"] == "1.2.0"
    assert c["type"] == "software" and "tfconv" in c["title"] and c["message"].strip()
    assert c["version"] == project["version"], "CITATION.cff's version must be pyproject.toml's"
    assert c["license"] == project["license"]["text"]
    assert c["authors"] and all(a.get("name") or a.get("family-names") for a in c["authors"])


def test_citation_cff_references_the_paper_as_the_readme_cites_it():
    refs = cff()["references"]
    assert len(refs) == 1
    paper = refs[0]
    readme = (ROOT / "README.md").read_text()
    bib = re.search(r"@inproceedings\{wu2023convergence,(.*?)\n\}", readme, re.S).group(1)
    field = lambda k: re.search(rf"{k}\s*=\s*\{{(.*?)\}},?\n", bib).group(1)  # noqa: E731
    assert paper["type"] == "conference-paper"
    assert paper["title"] == field("title")
    assert paper["year"] == int(field("year")) and paper["volume"] == int(field("volume"))
    readme_authors = [a.strip() for a in field("author").split(" and ")]
    assert [f"{a['family-names']}, {a['given-names']}" for a in paper["authors"]] == readme_authors
    assert f"arXiv:{field('eprint')}" in [i["value"] for i in paper["identifiers"]]
    assert paper["url"].endswith(field("eprint"))
