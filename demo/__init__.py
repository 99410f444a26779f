"""The SR4RS demo (`make demo`), run from the repository root: `python -m demo --out demo_out` runs the
whole workflow (demo/run.py) on a scene that `python -m demo.scene OUT_DIR` generates (demo/scene.py)."""
