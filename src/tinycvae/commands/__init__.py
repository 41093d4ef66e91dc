"""The commands, one module each, the bodies of the ``src/*.py`` entry scripts and of
their primary configs: :mod:`~tinycvae.commands.train` (``conf/train.yaml``),
:mod:`~tinycvae.commands.evaluate` (``conf/evaluate.yaml``),
:mod:`~tinycvae.commands.generate` (``conf/generate.yaml``),
:mod:`~tinycvae.commands.export` (``conf/export.yaml``) and
:mod:`~tinycvae.commands.pareto` (``src/pareto.py``'s arguments). They sit on top of the
library: nothing in tinycvae imports them."""
