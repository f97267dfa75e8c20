"""Instructions to answers: parsing, open-set gate, memory resolver, views, voting, relations."""
