"""Dataset readers: keys without dots, labels from the sorted identity list, skipped files listed,
and clear errors for roots and list files that cannot be read."""
from __future__ import annotations

from pathlib import Path

import pytest

from cdfv.pipeline.sources import SourceError, folder, lfw, open_dataset, split_part, vggface2


def touch(root: Path, *relative: str) -> Path:
    for rel in relative:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    return root


def test_lfw_real_root_keys_and_labels(lfw_root):
    ds = lfw(lfw_root)
    assert ds.identities == sorted(p.name for p in lfw_root.iterdir() if p.is_dir())
    item = next(i for i in ds.items if i.key == "Aaron_Peirsol__Aaron_Peirsol_0001")
    assert item.source == "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"
    assert item.identity == "Aaron_Peirsol" and item.label == ds.identities.index("Aaron_Peirsol")
    assert all("." not in i.key for i in ds.items)
    assert all(ds.identities[i.label] == i.identity for i in ds.items)
    assert len({i.key for i in ds.items}) == len(ds.items)
    assert ds.path(item).is_file()


def test_lfw_labels_follow_sorted_identities_and_misnamed_files_are_listed(tmp_path):
    root = touch(tmp_path, "Zoe_Ball/Zoe_Ball_0001.jpg", "Al_Gore/Al_Gore_0002.jpg", "Al_Gore/Al_Gore_0001.jpg",
                 "Al_Gore/holiday.jpg", "Al_Gore/Zoe_Ball_0003.jpg", "Al_Gore/notes.txt")
    ds = lfw(root)
    assert ds.identities == ["Al_Gore", "Zoe_Ball"]
    assert [(i.key, i.label) for i in ds.items] == [
        ("Al_Gore__Al_Gore_0001", 0), ("Al_Gore__Al_Gore_0002", 0), ("Zoe_Ball__Zoe_Ball_0001", 1)]
    skipped = dict(ds.skipped)
    assert set(skipped) == {"Al_Gore/holiday.jpg", "Al_Gore/Zoe_Ball_0003.jpg", "Al_Gore/notes.txt"}
    assert "not an LFW name" in skipped["Al_Gore/holiday.jpg"]
    assert "not an image suffix (.txt)" in skipped["Al_Gore/notes.txt"]


def test_folder_layout_on_celeba_photos(celeba_root):
    ds = folder(celeba_root)
    assert ds.identities == sorted(p.name for p in celeba_root.iterdir() if p.is_dir())
    first = ds.items[0]
    assert first.identity == ds.identities[0] and first.label == 0
    assert first.key == f"{first.identity}__{Path(first.source).stem}"
    assert all("." not in i.key and ds.path(i).is_file() for i in ds.items)


def test_folder_keys_replace_dots_and_collisions_are_an_error(tmp_path):
    ds = folder(touch(tmp_path / "ok", "Ann Lee/img.v2.jpg"))
    assert [i.key for i in ds.items] == ["Ann-Lee__img-v2"]
    root = touch(tmp_path / "clash", "ann/a.b.jpg", "ann/a-b.png")
    with pytest.raises(SourceError, match="map to the same key 'ann__a-b'") as err:
        folder(root)
    assert "ann/a-b.png" in str(err.value) and "ann/a.b.jpg" in str(err.value)


def test_vggface2_list_file_skips_missing_listed_files(tmp_path):
    root = touch(tmp_path / "data", "n000002/0001_01.jpg", "n000002/0002_01.jpg", "n000009/0001_01.jpg", "n000100/0001_01.jpg")
    listing = tmp_path / "test_list.txt"
    listing.write_text("n000009/0001_01.jpg\nn000002/0001_01.jpg\n\nn000002/0404_01.jpg\n")
    ds = vggface2(root, listing)
    assert ds.identities == ["n000002", "n000009"]  # n000100 is not listed
    assert [(i.key, i.label) for i in ds.items] == [("n000002__0001_01", 0), ("n000009__0001_01", 1)]
    assert ds.skipped == [("n000002/0404_01.jpg", "listed in test_list.txt:4 but missing")]


def test_vggface2_malformed_list_line_names_file_and_line(tmp_path):
    root = touch(tmp_path / "data", "n000002/0001_01.jpg")
    listing = tmp_path / "train_list.txt"
    listing.write_text("n000002/0001_01.jpg\n0001_01.jpg\n")
    with pytest.raises(SourceError, match=f"{listing}:2: expected <identity>/<image>, got '0001_01.jpg'"):
        vggface2(root, listing)


def test_vggface2_missing_list_file(tmp_path):
    root = touch(tmp_path / "data", "n000002/0001_01.jpg")
    with pytest.raises(SourceError, match="nope.txt: cannot read list file"):
        vggface2(root, tmp_path / "nope.txt")


@pytest.mark.parametrize("layout", ["lfw", "vggface2", "folder"])
def test_missing_root_is_a_clear_error(tmp_path, layout):
    with pytest.raises(SourceError, match=f"dataset root {tmp_path / 'absent'} does not exist"):
        open_dataset(layout, tmp_path / "absent")


def test_root_without_images_and_unknown_layout(tmp_path):
    (tmp_path / "empty_identity").mkdir()
    with pytest.raises(SourceError, match="no images found for the folder layout"):
        folder(tmp_path)
    with pytest.raises(SourceError, match="unknown layout 'celeba'"):
        open_dataset("celeba", tmp_path)
    afile = touch(tmp_path, "file.jpg") / "file.jpg"
    with pytest.raises(SourceError, match="is not a directory"):
        folder(afile)


def test_split_part_covers_everything_once_in_order():
    items = list(range(11))
    parts = [split_part(items, i, 3) for i in range(3)]
    assert sum(parts, []) == items
    assert sorted(len(p) for p in parts) == [3, 4, 4]
    with pytest.raises(ValueError, match="part 3 outside 0..2"):
        split_part(items, 3, 3)
