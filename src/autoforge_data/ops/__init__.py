"""Operations: doctor, and (in later issues) backup, restore, branching, replication."""
