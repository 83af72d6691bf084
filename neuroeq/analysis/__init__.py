"""Analysis of neuroeq datasets: functions that take ``xarray.Dataset``s and return
datasets or matplotlib figures. The notebooks in the repository's ``analysis/`` use them."""
