"""GTAPolicy: real-world tool use governed by a versioned-tool policy (SPEC §3).

Build a dataset (the bundled sample by default, or a GTA release with --gta-dir):

    trimpi data gta --out data/gta [--gta-dir GTA/] [--profiles-per-step 4] [--seed 0] [--overwrite]

    from trimpi.data.gta.build import build_gta
    build_gta(out=Path("data/gta"), gta_dir=None, profiles_per_step=4, seed=0, overwrite=True)

The output directory holds manifest.json, policies/GTAPolicy.json (and
GTAPolicy-override.json: same name, changed rules under "## RULE OVERRIDE"), images/,
train.jsonl, train_cot.jsonl (with the rule-engine rationale), test.jsonl and
override_test.jsonl — schema.Record rows with task="gta" whose answer is the gold call
{"name": "OCR_v4", "arguments": {...}} as JSON.

Score model outputs (also the RL reward):

    from trimpi.data.gta.metrics import score_tool_call, score_many
    from trimpi.data.gta.scorers import default_scorer   # MiniLM BERTScore-style, else lexical
    scorer = default_scorer()
    score_tool_call(model_text, record.answer, scorer)   # {"tool", "argument", "overall"}
    score_many(predictions, golds, scorer)               # means + n + scorer name

Modules: policy (the policy as data: tools, versions, rules, tips), rules (engine),
text (policy text/JSON), profiles, loader (GTA dataset.json/toolmeta.json), records
(query, gold call, rationale), build, metrics, scorers, safe_eval (AST-whitelist
arithmetic), sample_images (materializes the bundled sample's images). The bundled
sample in sample/ is our own GTA-format sample, not the GTA benchmark.
"""
