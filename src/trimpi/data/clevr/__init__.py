"""ClevrPolicy: CLEVR-style scenes governed by random decision-tree policies (SPEC §2)."""
