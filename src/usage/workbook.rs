//! Writing usage workbooks (being built).
