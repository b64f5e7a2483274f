"""The demo's self-contained HTML report: plots as inline SVG, no external assets, no scripts."""
