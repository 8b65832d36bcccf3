DROP TABLE ccm_docs;
