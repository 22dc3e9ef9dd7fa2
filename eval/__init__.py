"""cdfv-eval: the LFW verification protocol on original, decoded and compressed-domain faces."""
