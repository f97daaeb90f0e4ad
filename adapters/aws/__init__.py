"""AWS adapter (Lambda + SQS, DynamoDB/S3/Secrets Manager): botocore is imported only inside this package."""
