"""Reading manifests as `kyb apply -f` does: multi-document files, directories in name order,
stdin, and parse errors that name the file and line."""

from __future__ import annotations

import io
from pathlib import Path

from kyb.cli.manifests import Document, ManifestError, load

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n"


def names(items) -> list[str]:
    return [i.body["metadata"]["name"] for i in items if isinstance(i, Document)]


def test_multi_document_file_yields_each_document_and_skips_empty_ones(tmp_path: Path) -> None:
    f = tmp_path / "all.yaml"
    f.write_text("---\n" + CM.format(name="a") + "---\n---\n" + CM.format(name="b"))
    items = list(load([str(f)]))
    assert names(items) == ["a", "b"]
    assert [i.index for i in items] == [0, 1]
    assert all(i.source == str(f) for i in items)


def test_directory_is_read_in_name_order_and_only_manifest_files(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(CM.format(name="second"))
    (tmp_path / "a.json").write_text('{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"first"}}')
    (tmp_path / "c.yaml").write_text(CM.format(name="third"))
    (tmp_path / "notes.txt").write_text("not a manifest: [")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "d.yaml").write_text(CM.format(name="nested"))
    assert names(load([str(tmp_path)])) == ["first", "second", "third"]
    assert names(load([str(tmp_path)], recursive=True)) == ["first", "second", "third", "nested"]


def test_stdin_is_read_for_dash() -> None:
    items = list(load(["-"], stdin=io.StringIO(CM.format(name="piped"))))
    assert names(items) == ["piped"] and items[0].source == "STDIN"


def test_invalid_yaml_names_file_and_line_and_keeps_earlier_documents(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(CM.format(name="good") + "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"
                 "  labels: a: b\n")
    items = list(load([str(f)]))
    assert names(items) == ["good"]
    err = items[-1]
    assert isinstance(err, ManifestError)
    assert err.message.startswith(f"error parsing {f}: line 12:")
    assert "mapping values are not allowed" in err.message


def test_list_documents_are_expanded_and_non_mappings_reported(tmp_path: Path) -> None:
    f = tmp_path / "list.yaml"
    f.write_text("apiVersion: v1\nkind: List\nitems:\n- " + CM.format(name="one").replace("\n", "\n  ").rstrip()
                 + "\n- " + CM.format(name="two").replace("\n", "\n  ").rstrip() + "\n---\n- just\n- a list\n")
    items = list(load([str(f)]))
    assert names(items) == ["one", "two"]
    assert isinstance(items[-1], ManifestError) and "not a mapping" in items[-1].message


def test_missing_path_is_reported(tmp_path: Path) -> None:
    items = list(load([str(tmp_path / "nope.yaml")]))
    assert items == [ManifestError(str(tmp_path / "nope.yaml"), f'the path "{tmp_path / "nope.yaml"}" does not exist')]
