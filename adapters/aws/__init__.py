"""AWS adapter (Lambda + SQS, DynamoDB/S3/Secrets Manager): boto3 is imported only inside this package."""
