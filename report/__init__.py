"""`pie report`: one self-contained HTML page of the study (plots, tables, a PIE gallery)."""
