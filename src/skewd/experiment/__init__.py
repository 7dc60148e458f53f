"""skewd experiment: a multi-stage inference pipeline across nodes, with skew
injected at one stage, measured for when its traces stop telling the truth."""
