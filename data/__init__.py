"""The committed snapshots of published tables (see README.md), shipped as `carmenes_dtl.snapshots`."""
