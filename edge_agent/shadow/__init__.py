"""Shadow inspection: a challenger model on the champion's frames, never acted on; only aggregates
of the comparison are kept (agreement, the challenger's confidence and anomaly-score histograms, its
latency). No frame, crop or feature leaves this package."""
