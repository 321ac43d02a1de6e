"""Reading orders back from their workflow history."""
