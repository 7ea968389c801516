//! Data diff: rows changed between two sides, read from changed pages only.
