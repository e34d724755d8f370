"""kbridge benchmarks: `python -m bench` (or `make bench`).

Every benchmark measures its own baseline in the same run and reports a ratio,
because this machine is shared and noisy: absolute rates mean little, while
"kbridge vs. the same work without kbridge, measured a minute apart" does.
"""
