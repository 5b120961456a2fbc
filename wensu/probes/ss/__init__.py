"""Secondary structure (SS3/SS8): FLIP NetSurfP data, a small trained head per encoder, and
the runner."""
