"""Pure evaluation: metrics, reports and plots from predictions."""
