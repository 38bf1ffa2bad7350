"""Reading workbooks fast (fastexcel → Arrow → polars), keeping Excel row numbers."""
