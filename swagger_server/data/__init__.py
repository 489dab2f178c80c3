"""The data API: catalog, query building, cursors, exports, value errors."""
