"""Example workflows used by the demo, the example DAGs and the docs."""
