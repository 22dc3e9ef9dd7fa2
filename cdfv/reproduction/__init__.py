"""cdfv-reproduce: the thesis comparison (chapter 6) on real faces in one command, orchestrating
cdfv-prep, cdfv-train and cdfv-eval as a user would type them.

A run has two halves kept apart on disk: what is learned once (codecs, teacher targets, students,
the ResNet50), under <out>/, and what is measured per pairs file (LFW faces coded, anchors,
scores, report), under <out>/evals/<pairs>-<digest>/, so a finished run is evaluated on another
pairs file without training anything again."""
