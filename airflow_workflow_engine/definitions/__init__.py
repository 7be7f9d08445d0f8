"""Stage and workflow definitions: pure, typed values with no Airflow or database import."""
