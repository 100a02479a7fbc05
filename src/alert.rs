//! Operator alerts (issue 5 fills this in).
