DROP TABLE graphs;
DROP TABLE functions;
