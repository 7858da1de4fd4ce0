"""Online loading from the Hugging Face hub (the path used when no mirror is configured)."""
from __future__ import annotations

from typing import Any

from suite.data.registry import DatasetSpec
from suite.core.errors import MissingDataError


def load_hub_split(spec: DatasetSpec, source_split: str) -> list[dict[str, Any]]:
    """Rows of one hub split, renamed to the mirror's field names (text / text_a,text_b, label).

    Labels are mapped by class name when the hub declares a ``ClassLabel`` feature, so a hub
    copy with another label order still yields the suite's ``label_names`` indices.
    """
    hub = spec.hub
    hub_split = hub.splits.get(source_split)
    if hub_split is None:
        raise MissingDataError(f"{spec.name}: the hub source {hub.repo_id} has no split for '{source_split}'")
    try:
        import datasets

        ds = datasets.load_dataset(hub.repo_id, hub.config, revision=hub.revision, split=hub_split)
    except Exception as exc:  # offline, gated, renamed…
        raise MissingDataError(
            f"{spec.name}: could not load split '{hub_split}' of {hub.repo_id} from the hub "
            f"({type(exc).__name__}); set SUITE_DATA_DIR to the offline mirror (e.g. ../shared/datasets)"
        ) from exc
    label_feature = ds.features.get(hub.label_field)
    names = getattr(label_feature, "names", None)
    remap = None
    if names:
        lowered = [n.lower() for n in spec.label_names]
        if all(n.lower() in lowered for n in names):
            remap = {i: lowered.index(n.lower()) for i, n in enumerate(names)}
    out_fields = spec.text_fields
    rows = []
    for i, row in enumerate(ds):
        label = int(row[hub.label_field])
        rec = {f: row[h] for f, h in zip(out_fields, hub.text_fields)}
        rec["label"] = remap[label] if remap else label
        rec["idx"] = i
        rows.append(rec)
    return rows
