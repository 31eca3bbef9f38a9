"""The faithful IISAN protocol: exact counts on the real files, filtering, re-indexing."""

import polars as pl
import pytest

from data_prep.protocol import apply_protocol
from data_prep.readers import RawDataset, ReadContext, items_frame, read_raw

IISAN = {
    "Scientific": ("am_Industrial_and_Scientific_users.tsv", "Industrial_and_Scientific_items.tsv",
                   12_076, 20_314, 81_711),
    "Instrument": ("am_Musical_Instruments_users_10K.tsv", "Musical_Instruments_items.tsv",
                   10_000, 19_246, 75_022),
}


@pytest.mark.parametrize("folder", sorted(IISAN))
def test_iisan_counts_on_real_files(shared_data, folder):
    users_file, items_file, n_users, n_items, n_inter = IISAN[folder]
    root = shared_data / "amazon-iisan" / folder
    raw = read_raw(
        "amazon_iisan",
        {"users_file": str(root / users_file), "items_file": str(root / items_file)},
        ReadContext(),
    )
    dataset = apply_protocol(raw, min_interactions=5, keep_last=13, dataset=folder)
    dataset.validate()
    assert (dataset.num_users, dataset.num_items, dataset.interactions.height) == (
        n_users, n_items, n_inter)
    assert dataset.stats["users"] == n_users and dataset.stats["items"] == n_items
    assert dataset.stats["interactions"] == n_inter
    titles = dataset.items["title"]
    assert not titles.str.contains("&amp;|&#39;|&quot;").any()
    assert titles.str.contains("&").any() and titles.str.contains("'").any()


def _raw(sequences: dict[str, list[str]]) -> RawDataset:
    keys = sorted({item for seq in sequences.values() for item in seq} | {"unused"})
    interactions = pl.DataFrame(
        {"user_key": [u for u, seq in sequences.items() for _ in seq],
         "item_key": [i for seq in sequences.values() for i in seq]}
    )
    return RawDataset(items_frame(keys, [f"title {k}" for k in keys]), interactions)


def test_filter_truncate_and_reindex_in_first_appearance_order():
    raw = _raw({
        "u9": list("abcdefg"),  # 7 -> last 5: c d e f g
        "u1": list("xy"),       # too short -> dropped
        "u5": list("gzcqq"),    # 5 -> kept whole (repeat item q)
    })
    dataset = apply_protocol(raw, min_interactions=5, keep_last=5, dataset="toy")
    dataset.validate()
    assert dataset.users["key"].to_list() == ["u9", "u5"]
    assert dataset.items["key"].to_list() == list("cdefgzq")
    assert dataset.items["item_id"].to_list() == list(range(1, 8))
    seq = dataset.interactions.group_by("user_id", maintain_order=True).agg("item_id")
    assert seq["item_id"].to_list() == [[1, 2, 3, 4, 5], [5, 6, 1, 7, 7]]
    assert dataset.interactions["position"].to_list() == [0, 1, 2, 3, 4] * 2
    assert dataset.stats["dropped"] == {
        "users_below_min_interactions": 1,
        "interactions_of_dropped_users": 2,
        "interactions_beyond_keep_last": 2,
        "items_without_interactions": 5,  # a, b, x, y, unused
    }


def test_keep_last_none_keeps_everything():
    raw = _raw({"u": list("abcdefghij"), "v": list("jihgf")})
    dataset = apply_protocol(raw, min_interactions=5, keep_last=None, dataset="toy")
    assert dataset.interactions.height == 15
    assert dataset.stats["protocol"] == {"min_interactions": 5, "keep_last": None}


def test_rejects_protocols_too_short_for_leave_one_out():
    raw = _raw({"u": list("abcde")})
    with pytest.raises(ValueError, match="min_interactions"):
        apply_protocol(raw, min_interactions=2, dataset="toy")
    with pytest.raises(ValueError, match="keep_last"):
        apply_protocol(raw, keep_last=2, dataset="toy")
