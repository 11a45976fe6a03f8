"""Queue and ledger side: the dramatiq broker and actors, the pure fold and the SQL store around it."""
