"""Import of 1C shift tasks from xlsx/csv files and export of batches to xlsx/csv."""
