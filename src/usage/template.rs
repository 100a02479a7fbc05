//! The usage workbook template (being built).
